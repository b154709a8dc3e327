"""The ``dft`` command line: the same library calls the jobs make, for people."""
