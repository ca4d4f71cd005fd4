"""Entry-point module for ``nerfstudio.method_configs``: one MethodSpecification per method and preset.

Every ns-* command imports this module (through nerfstudio's registry), so it must stay cheap and must
never raise: it imports only configs. It must not import ``nerfstudio.configs.method_configs``,
``nerfstudio.utils.eval_utils`` or ``nerfstudio.scripts.*`` (circular imports). Presets are overrides
of one base config per method.
"""
