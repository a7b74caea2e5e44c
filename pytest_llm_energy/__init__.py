"""pytest-llm-energy: energy regression testing of LLM code assistants."""

from .results import BlockResult, CaseResult, PhaseEnergy
from .runner import Generation, GenerationConfig

__all__ = ["BlockResult", "CaseResult", "Generation", "GenerationConfig", "PhaseEnergy"]
__version__ = "0.1.0"
