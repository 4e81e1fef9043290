"""Refined examples: rewrites of prompts the student got wrong, guarded, stored and exported.

    from neurosym.remake import RemakeStore, check_rewrite, export_refined
"""
from neurosym.remake.export import export_refined
from neurosym.remake.guards import check_rewrite, prompt_key
from neurosym.remake.store import RemakeStore

__all__ = ["RemakeStore", "check_rewrite", "prompt_key", "export_refined"]
