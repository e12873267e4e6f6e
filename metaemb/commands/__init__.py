"""Every `metaemb` command, one module each: add_arguments(parser) declares its options (light:
argparse only), run(args, cfg) does the work and imports what it needs when it runs."""
