"""Entry-point module for ``nerfstudio.dataparser_configs``: one DataParserSpecification per parser.

nerfstudio imports this module from inside its datamanager module, so it may import only
dataparser-level code (``base_dataparser``, ``cameras``, ``scene_box``, ``registry_dataparser``),
never datamanagers, pipelines or the trainer. The entry-point name is the CLI subcommand.
"""
