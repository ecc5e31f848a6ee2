"""The recipe: typed sections (config), strict YAML reading, value checks, loading."""
