-- MCP OAuth: authorizations in progress by their state, and each user's sealed credentials
-- per server, written conditionally on their version.
CREATE TABLE IF NOT EXISTS mcp_authorizations (
        state VARCHAR(191) PRIMARY KEY, owner VARCHAR(191) NOT NULL, server VARCHAR(191) NOT NULL,
        sealed LONGTEXT NOT NULL, expires_at DOUBLE NOT NULL
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE TABLE IF NOT EXISTS mcp_credentials (
        owner VARCHAR(191) NOT NULL, server VARCHAR(191) NOT NULL, sealed LONGTEXT NOT NULL,
        version BIGINT NOT NULL, refreshing_until DOUBLE NOT NULL, updated_at DOUBLE NOT NULL,
        PRIMARY KEY (owner, server)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
