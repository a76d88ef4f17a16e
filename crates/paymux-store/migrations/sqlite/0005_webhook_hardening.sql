-- What a merchant's endpoint answered is no longer kept: showing it back through the API turned a
-- blind request into a read of whatever the endpoint's URL reached. The status code stays.
ALTER TABLE delivery_attempts DROP COLUMN response_snippet;

-- A rotation keeps every secret still inside its overlap window, not only the last one: rotating
-- twice in a row must not drop the secret the merchant still verifies with. Every secret here
-- signs alongside the endpoint's current one until it expires.
CREATE TABLE webhook_old_secrets (
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id),
    secret      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX webhook_old_secrets_endpoint ON webhook_old_secrets (endpoint_id, expires_at);
INSERT INTO webhook_old_secrets (endpoint_id, secret, expires_at)
    SELECT id, previous_secret, previous_secret_expires_at FROM webhook_endpoints
    WHERE previous_secret IS NOT NULL AND previous_secret_expires_at IS NOT NULL;
ALTER TABLE webhook_endpoints DROP COLUMN previous_secret;
ALTER TABLE webhook_endpoints DROP COLUMN previous_secret_expires_at;

-- The secret each rotation made, by its Idempotency-Key: a rotation retried after its answer was
-- lost hands back the same secret instead of making another, even once the idempotent response
-- itself is gone.
CREATE TABLE webhook_rotations (
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints(id),
    idempotency_key TEXT NOT NULL,
    secret          TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, idempotency_key)
);
