CREATE TABLE IF NOT EXISTS skills (
        name VARCHAR(191) PRIMARY KEY, owner VARCHAR(191) NOT NULL, description TEXT NOT NULL,
        package MEDIUMTEXT NOT NULL, created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL,
        KEY skills_owner (owner)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
