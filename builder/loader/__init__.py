"""The loader: validated settings, the rendered (and minified) script, and bulk builds from a CSV."""
