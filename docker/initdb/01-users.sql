-- Run once by the mariadb image on its first start (empty data volume), as root, inside the
-- database named by MARIADB_DATABASE (iot), which the image also grants to MARIADB_USER.
-- The table of docs/mysql.md. The optional columns (enabled, last_step,
-- created_at) are added by `docker compose -f docker/compose.yaml run --rm broker db migrate`.
CREATE TABLE users (
  id INT AUTO_INCREMENT PRIMARY KEY,
  username VARCHAR(64) UNIQUE NOT NULL,
  password VARCHAR(100) NOT NULL,   -- bcrypt
  totp_secret VARCHAR(64) NOT NULL  -- base32
);
