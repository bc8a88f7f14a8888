from .load import load_recipe, parse_override, recipe_from_dict, recipe_to_yaml
from .schema import Recipe

__all__ = ["Recipe", "load_recipe", "parse_override", "recipe_from_dict", "recipe_to_yaml"]
