"""Real data sources the recipes read, each with a `fetch` that puts the files where the loader looks."""
