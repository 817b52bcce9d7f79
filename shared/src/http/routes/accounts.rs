//! Accounts (`/api/user/*`) and the system settings (`/api/system/*`), served by the Session
//! function: log in, refresh, register, the signed-in user's own account, the admin's routes.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::accounts::{Accounts, NewAccount};
use crate::http::extract::{Caller, ValidJson, ValidQuery};
use crate::http::{ApiError, Envelope, ok};
use crate::wire::api::{
    AccountCreated, AccountList, AccountOption, Empty, LoginCheck, SystemInfo, TokenPair,
};

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(accounts: Accounts) -> Router {
    Router::new()
        .route("/api/user/login", post(login))
        .route("/api/user/refresh", post(refresh))
        .route("/api/user/register", post(register))
        .route("/api/user/check_login", get(check_login))
        .route("/api/user/change-password", post(change_password))
        .route("/api/user/list", get(list))
        .route("/api/user/add", post(add))
        .route("/api/user/delete", post(delete))
        .route("/api/user/options", get(options))
        .route("/api/system/info", get(system_info))
        .route("/api/system/update_settings", post(update_settings))
        .with_state(accounts)
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(alias = "username")]
    username_or_email: String,
    password: String,
}

async fn login(
    State(accounts): State<Accounts>,
    ValidJson(body): ValidJson<LoginBody>,
) -> Answer<TokenPair> {
    let password = SecretString::from(body.password);
    Ok(ok(accounts
        .login(&body.username_or_email, password)
        .await?))
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

async fn refresh(
    State(accounts): State<Accounts>,
    ValidJson(body): ValidJson<RefreshBody>,
) -> Answer<TokenPair> {
    Ok(ok(accounts.refresh(&body.refresh_token).await?))
}

#[derive(Deserialize)]
struct AccountBody {
    username: String,
    password: String,
    email: Option<String>,
    phonenum: Option<String>,
    role: Option<String>,
}

impl AccountBody {
    fn parse(self) -> Result<NewAccount, ApiError> {
        Ok(NewAccount::parse(
            &self.username,
            SecretString::from(self.password),
            self.email.as_deref(),
            self.phonenum.as_deref(),
            self.role.as_deref(),
        )?)
    }
}

async fn register(
    State(accounts): State<Accounts>,
    ValidJson(body): ValidJson<AccountBody>,
) -> Answer<AccountCreated> {
    Ok(ok(accounts.register(body.parse()?).await?))
}

async fn check_login(State(accounts): State<Accounts>, caller: Caller) -> Answer<LoginCheck> {
    let user = accounts.claims(caller.signed_in()?).await?;
    Ok(ok(LoginCheck { user }))
}

#[derive(Deserialize)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

async fn change_password(
    State(accounts): State<Accounts>,
    caller: Caller,
    ValidJson(body): ValidJson<PasswordChange>,
) -> Answer<Empty> {
    accounts
        .change_password(
            caller.signed_in()?,
            SecretString::from(body.old_password),
            SecretString::from(body.new_password),
        )
        .await?;
    Ok(ok(Empty {}))
}

#[derive(Deserialize)]
struct ListParams {
    page: Option<u64>,
    page_size: Option<u64>,
}

async fn list(
    State(accounts): State<Accounts>,
    caller: Caller,
    ValidQuery(params): ValidQuery<ListParams>,
) -> Answer<AccountList> {
    let page = params.page.unwrap_or(1);
    let page_size = params.page_size.unwrap_or(20);
    Ok(ok(accounts
        .list(caller.signed_in()?, page, page_size)
        .await?))
}

async fn add(
    State(accounts): State<Accounts>,
    caller: Caller,
    ValidJson(body): ValidJson<AccountBody>,
) -> Answer<AccountCreated> {
    Ok(ok(accounts.add(caller.signed_in()?, body.parse()?).await?))
}

#[derive(Deserialize)]
struct DeleteBody {
    #[serde(alias = "id")]
    user_id: String,
}

async fn delete(
    State(accounts): State<Accounts>,
    caller: Caller,
    ValidJson(body): ValidJson<DeleteBody>,
) -> Answer<Empty> {
    accounts.delete(caller.signed_in()?, &body.user_id).await?;
    Ok(ok(Empty {}))
}

async fn options(State(accounts): State<Accounts>, caller: Caller) -> Answer<Vec<AccountOption>> {
    Ok(ok(accounts.options(caller.signed_in()?).await?))
}

async fn system_info(State(accounts): State<Accounts>) -> Answer<SystemInfo> {
    Ok(ok(accounts.system_info().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    allow_registration: bool,
}

async fn update_settings(
    State(accounts): State<Accounts>,
    caller: Caller,
    ValidJson(body): ValidJson<SettingsBody>,
) -> Answer<Empty> {
    accounts
        .update_settings(caller.signed_in()?, body.allow_registration)
        .await?;
    Ok(ok(Empty {}))
}
