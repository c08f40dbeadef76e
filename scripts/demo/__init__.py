"""Training scripts of the offline demo model set (issue 4): small networks of the real classes, trained
on CPU on the procedural faces of ``editing.demo.faces`` and shipped in ``demo_models/``."""
