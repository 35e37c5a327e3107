"""The Systems a comparison measures: Translator (any sampler on any network, eager or compiled),
its networks, and the diffusers peer."""
