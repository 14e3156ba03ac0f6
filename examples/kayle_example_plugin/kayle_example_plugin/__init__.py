"""Example kayle-webhooks plugin."""
