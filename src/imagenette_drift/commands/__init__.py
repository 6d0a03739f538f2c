"""Project subcommands of `imagenette` that are not Lightning Trainer entry points."""
