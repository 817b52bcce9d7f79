//! Accounts (`/api/user/*`) and the system settings (`/api/system/*`), served by the Session
//! function: log in, refresh, register, the signed-in user's own account, the admin's routes.

use axum::Json;
use axum::extract::State;
use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::accounts::{Accounts, NewAccount};
use crate::http::extract::{Caller, ValidJson, ValidQuery};
use crate::http::{ApiError, Envelope, ok};
use crate::wire::api::{
    AccountCreated, AccountList, AccountOption, Empty, LoginCheck, SystemInfo, TokenPair,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(accounts: Accounts) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(register))
        .routes(routes!(check_login))
        .routes(routes!(change_password))
        .routes(routes!(list))
        .routes(routes!(add))
        .routes(routes!(delete))
        .routes(routes!(options))
        .routes(routes!(system_info))
        .routes(routes!(update_settings))
        .with_state(accounts)
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LoginBody {
    #[serde(alias = "username")]
    username_or_email: String,
    password: String,
}

#[utoipa::path(post, path = "/api/user/login", tag = "session", request_body = LoginBody, security(()), responses((status = 200, body = Envelope<TokenPair>)))]
async fn login(
    State(accounts): State<Accounts>,
    ValidJson(body): ValidJson<LoginBody>,
) -> Answer<TokenPair> {
    let password = SecretString::from(body.password);
    Ok(ok(accounts
        .login(&body.username_or_email, password)
        .await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct RefreshBody {
    refresh_token: String,
}

#[utoipa::path(post, path = "/api/user/refresh", tag = "session", request_body = RefreshBody, security(()), responses((status = 200, body = Envelope<TokenPair>)))]
async fn refresh(
    State(accounts): State<Accounts>,
    ValidJson(body): ValidJson<RefreshBody>,
) -> Answer<TokenPair> {
    Ok(ok(accounts.refresh(&body.refresh_token).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
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

#[utoipa::path(post, path = "/api/user/register", tag = "session", request_body = AccountBody, security(()), responses((status = 200, body = Envelope<AccountCreated>)))]
async fn register(
    State(accounts): State<Accounts>,
    ValidJson(body): ValidJson<AccountBody>,
) -> Answer<AccountCreated> {
    Ok(ok(accounts.register(body.parse()?).await?))
}

#[utoipa::path(get, path = "/api/user/check_login", tag = "session", responses((status = 200, body = Envelope<LoginCheck>)))]
async fn check_login(State(accounts): State<Accounts>, caller: Caller) -> Answer<LoginCheck> {
    let user = accounts.claims(caller.signed_in()?).await?;
    Ok(ok(LoginCheck { user }))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

#[utoipa::path(post, path = "/api/user/change-password", tag = "session", request_body = PasswordChange, responses((status = 200, body = Envelope<Empty>)))]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// From 1.
    #[param(minimum = 1)]
    page: Option<u64>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u64>,
}

#[utoipa::path(get, path = "/api/user/list", tag = "session", params(ListParams), responses((status = 200, body = Envelope<AccountList>)))]
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

#[utoipa::path(post, path = "/api/user/add", tag = "session", request_body = AccountBody, responses((status = 200, body = Envelope<AccountCreated>)))]
async fn add(
    State(accounts): State<Accounts>,
    caller: Caller,
    ValidJson(body): ValidJson<AccountBody>,
) -> Answer<AccountCreated> {
    Ok(ok(accounts.add(caller.signed_in()?, body.parse()?).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct DeleteBody {
    #[serde(alias = "id")]
    user_id: String,
}

#[utoipa::path(post, path = "/api/user/delete", tag = "session", request_body = DeleteBody, responses((status = 200, body = Envelope<Empty>)))]
async fn delete(
    State(accounts): State<Accounts>,
    caller: Caller,
    ValidJson(body): ValidJson<DeleteBody>,
) -> Answer<Empty> {
    accounts.delete(caller.signed_in()?, &body.user_id).await?;
    Ok(ok(Empty {}))
}

#[utoipa::path(get, path = "/api/user/options", tag = "session", responses((status = 200, body = Envelope<Vec<AccountOption>>)))]
async fn options(State(accounts): State<Accounts>, caller: Caller) -> Answer<Vec<AccountOption>> {
    Ok(ok(accounts.options(caller.signed_in()?).await?))
}

#[utoipa::path(get, path = "/api/system/info", tag = "session", security(()), responses((status = 200, body = Envelope<SystemInfo>)))]
async fn system_info(State(accounts): State<Accounts>) -> Answer<SystemInfo> {
    Ok(ok(accounts.system_info().await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    allow_registration: bool,
}

#[utoipa::path(post, path = "/api/system/update_settings", tag = "session", request_body = SettingsBody, responses((status = 200, body = Envelope<Empty>)))]
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
