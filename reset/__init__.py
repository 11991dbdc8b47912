"""ReSet: rejection sampling for continued self-instruction tuning.

The package holds the pipeline's logic; the Snakemake rules only name files and
call `python -m reset.<module>`. Nothing here imports Snakemake.
"""

__version__ = "0.1.0"
