"""Model components: recurrent cores, world models and their building blocks."""
