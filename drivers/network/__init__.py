"""Network drivers: the emulated lab's namespaces, and (later) real labs' static networks."""
