"""An example of a user's own package for diffbench: a sampler and a model, declared as
entry points, with tests through diffbench's pytest plugin and ``diffbench ab`` cases."""
