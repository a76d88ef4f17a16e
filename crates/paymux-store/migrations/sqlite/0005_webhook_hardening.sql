-- What a merchant's endpoint answered is no longer kept: showing it back through the API turned a
-- blind request into a read of whatever the endpoint's URL reached. The status code stays.
ALTER TABLE delivery_attempts DROP COLUMN response_snippet;
