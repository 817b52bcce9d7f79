-- MCP OAuth: authorizations in progress by their state, and each user's sealed credentials
-- per server, written conditionally on their version.
CREATE TABLE IF NOT EXISTS mcp_authorizations (
    state TEXT PRIMARY KEY, owner TEXT NOT NULL, server TEXT NOT NULL, sealed TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mcp_credentials (
    owner TEXT NOT NULL, server TEXT NOT NULL, sealed TEXT NOT NULL, version INTEGER NOT NULL,
    refreshing_until REAL NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (owner, server)
);
