"""OAuth-protected MCP peer (mcp<2, FastMCP) for the end-to-end tests: one process is both the
authorization server (RFC 8414 metadata, DCR, /authorize, /token) and the resource server
(RFC 9728 metadata, /mcp behind bearer auth).

Usage: python mcp_oauth_server.py PORT [ACCESS_TOKEN_TTL_SECONDS]
/authorize approves at once (no login page): it redirects to redirect_uri with code+state.
GET /stats -> {"registrations", "code_exchanges", "refreshes", "refresh_failures"} (no auth).
POST /revoke[?refresh=1] forgets the access tokens (and the refresh tokens) at once.
"""

import secrets
import sys
import time

from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions
from mcp.server.fastmcp import FastMCP
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
TTL = int(sys.argv[2]) if len(sys.argv) > 2 else 3600
BASE = f"http://127.0.0.1:{PORT}"  # one spelling everywhere: rmcp compares hosts as strings
SCOPE = "mcp"
STATS = {"registrations": 0, "code_exchanges": 0, "refreshes": 0, "refresh_failures": 0}


class InstantProvider:
    def __init__(self) -> None:
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        STATS["registrations"] += 1
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            client_id=client.client_id,
            scopes=params.scopes or [SCOPE],
            expires_at=time.time() + 300,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject="alice",
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client, authorization_code: str):
        return self.codes.get(authorization_code)

    def _issue(self, client_id: str, scopes: list[str], resource: str | None, subject: str | None) -> OAuthToken:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.access[access] = AccessToken(
            token=access, client_id=client_id, scopes=scopes,
            expires_at=int(time.time()) + TTL, resource=resource, subject=subject,
        )
        self.refresh[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource, subject=subject,
        )
        return OAuthToken(access_token=access, expires_in=TTL, scope=" ".join(scopes), refresh_token=refresh)

    async def exchange_authorization_code(self, client, authorization_code: AuthorizationCode) -> OAuthToken:
        del self.codes[authorization_code.code]  # single use
        STATS["code_exchanges"] += 1
        return self._issue(client.client_id, authorization_code.scopes, authorization_code.resource,
                           authorization_code.subject)

    async def load_refresh_token(self, client, refresh_token: str):
        token = self.refresh.get(refresh_token)
        if token is None:
            STATS["refresh_failures"] += 1  # e.g. a second refresh with a rotated-out token
        return token

    async def exchange_refresh_token(self, client, refresh_token: RefreshToken, scopes: list[str]) -> OAuthToken:
        if self.refresh.pop(refresh_token.token, None) is None:  # rotate: old one dies
            STATS["refresh_failures"] += 1
            raise TokenError("invalid_grant", "refresh token already used")
        STATS["refreshes"] += 1
        return self._issue(client.client_id, scopes, refresh_token.resource, refresh_token.subject)

    async def load_access_token(self, token: str) -> AccessToken | None:
        found = self.access.get(token)
        if found is None or (found.expires_at and found.expires_at < time.time()):
            return None
        return found

    async def revoke_token(self, token) -> None:
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)


PROVIDER = InstantProvider()

mcp = FastMCP(
    "sage-oauth-peer",
    host="127.0.0.1",
    port=PORT,
    auth_server_provider=PROVIDER,
    auth=AuthSettings(
        issuer_url=AnyHttpUrl(BASE),
        resource_server_url=AnyHttpUrl(f"{BASE}/mcp"),
        validate_token_resource=True,
        required_scopes=[SCOPE],
        client_registration_options=ClientRegistrationOptions(
            enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE]
        ),
    ),
)


@mcp.tool(structured_output=False)
def whoami() -> str:
    """The subject and client the bearer token was issued to."""
    token = get_access_token()
    return f"{token.subject} via {token.client_id}" if token else "anonymous"


@mcp.tool(structured_output=False)
def echo(text: str) -> str:
    """Returns the text it was given."""
    return text


@mcp.custom_route("/stats", methods=["GET"])
async def stats(_: Request) -> JSONResponse:
    return JSONResponse(STATS)


@mcp.custom_route("/revoke", methods=["POST"])
async def revoke(request: Request) -> JSONResponse:
    """Forgets every access token before it expires; with ?refresh=1 the refresh tokens too."""
    PROVIDER.access.clear()
    if request.query_params.get("refresh") == "1":
        PROVIDER.refresh.clear()
    return JSONResponse({"revoked": True})


if __name__ == "__main__":
    mcp.run(transport="streamable-http")
