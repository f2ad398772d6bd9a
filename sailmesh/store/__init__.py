"""Config stores: the ConfigStore protocol, an in-memory store and a watched directory of YAML."""
