"""
Data: the HomeObjects-SV generator (packaged meshes -> renders + clouds), its layout, loaders and checks.

Entry points: ``mesc3d dataset make|check|preview`` (cli.py); ``generate.make_dataset`` (also for tests, with
``generate.TINY_OBJECT_IDS``); ``dataset.ReconstructionDataset`` / ``dataset.open_dataset`` (generated, ShapeNet,
Pix3D layouts). docs/data.md describes the layout, categories, splits and frames.
"""
