"""deqbench's built-in plugins, loaded through the ``deqbench`` entry-point group like any other."""
