"""History: every generation stored with its parameters. Never imports Qt."""
