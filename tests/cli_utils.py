"""Helpers for running the CLI modules in-process in tests."""


def parsed_flags(module, *argv):
    """The CLI module's flags parsed from argv, in a FlagValues of their own."""
    from absl import flags

    fv = flags.FlagValues()
    module.define_flags(fv)
    fv(["prog", *argv])
    return fv
