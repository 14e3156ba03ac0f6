"""The receiving half of kayle-webhooks: verify, decrypt, deduplicate and enqueue Kayle deliveries."""
