"""Model definitions shared by recipes (a recipe adds data, loss and metrics around one)."""
