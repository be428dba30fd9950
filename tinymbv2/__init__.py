"""tinymbv2."""
