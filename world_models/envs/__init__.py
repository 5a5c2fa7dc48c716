"""CarRacing environments: `make_env("fast" | "stock")` and the byte-identical `FastCarRacing`."""

from world_models.envs.car_racing import FastCarRacing, make_env

__all__ = ["FastCarRacing", "make_env"]
