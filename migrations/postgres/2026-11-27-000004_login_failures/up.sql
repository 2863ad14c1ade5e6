-- Failed logins, counted per key ("user:<name>@<address>" and "address:<address>") so that
-- every replica throttles the same guesser. A row goes on a successful login (its user key)
-- or when its window has passed.
CREATE TABLE login_failures (
    key           TEXT      PRIMARY KEY,
    failures      BIGINT    NOT NULL,
    first_at      TIMESTAMP NOT NULL,
    blocked_until TIMESTAMP
);
