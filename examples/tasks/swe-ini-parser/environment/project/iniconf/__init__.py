"""A small, strict INI parser."""

from iniconf.config import Config, ConfigError
from iniconf.parser import load, loads

__all__ = ["Config", "ConfigError", "load", "loads"]
