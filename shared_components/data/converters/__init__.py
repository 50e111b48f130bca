"""Converters from official dataset layouts to checked, folded datalists; ``base`` holds what they share."""
