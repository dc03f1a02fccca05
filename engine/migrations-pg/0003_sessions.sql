-- Console sessions, kept by the server: the cookie carries a random session
-- id (only its SHA-256 is stored), never the API token. A session ends at
-- expires_at, at sign-out (the row is deleted), or when its token is revoked.
CREATE TABLE sessions (
    hash       TEXT PRIMARY KEY,
    token_id   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sessions_by_token ON sessions (token_id);
