"""The working half of kayle-webhooks: handler plugins, dispatch, retries and failed events."""
