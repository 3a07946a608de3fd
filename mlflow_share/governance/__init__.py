"""Version governance: protected aliases, alias history, rollback, branches."""
