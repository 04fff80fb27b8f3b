-- `camledger cameras limit ID RATE [--burst M]`: a camera's own rate limit (events per
-- second and burst), in force instead of `serve --rate-limit`; both NULL: the default.
ALTER TABLE principals ADD COLUMN rate_per_sec REAL;
ALTER TABLE principals ADD COLUMN rate_burst INTEGER;
