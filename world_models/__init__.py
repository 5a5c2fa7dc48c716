"""Recurrent world models of CarRacing: collect episodes, train, roll out, compare."""
