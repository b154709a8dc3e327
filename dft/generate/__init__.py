"""Generation: prompt rows in, images out; a plain callable core and a Ray Data adapter."""
