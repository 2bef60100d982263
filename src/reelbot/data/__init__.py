"""Package data: model sets and style presets."""
