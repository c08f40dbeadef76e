"""The offline demo world: procedural cartoon faces and their captions, on which small models are trained."""
