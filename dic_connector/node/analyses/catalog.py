"""The analyses catalogue: name (and version) -> :class:`~dic_connector.node.analyses.base.Analysis`.

The catalogue is built afresh on each call from an immutable tuple of classes (no mutable
module state), so callers may keep or discard the instances freely. Protocols: see each
analysis module (replicated sharing of Araki et al. CCS 2016 / ABY3 throughout).
"""

from __future__ import annotations

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import Analysis
from dic_connector.node.analyses.contingency import Contingency
from dic_connector.node.analyses.correlation import Correlation
from dic_connector.node.analyses.count import Count, CountTrue
from dic_connector.node.analyses.cox import CoxRegression
from dic_connector.node.analyses.fisher import ChiSquare, Fisher
from dic_connector.node.analyses.frequency import Frequency
from dic_connector.node.analyses.histogram import Histogram
from dic_connector.node.analyses.logistic import LogisticRegression
from dic_connector.node.analyses.logrank import Logrank
from dic_connector.node.analyses.mean import Mean
from dic_connector.node.analyses.median import Median
from dic_connector.node.analyses.prevalence import Prevalence
from dic_connector.node.analyses.quantiles import Quantiles
from dic_connector.node.analyses.regression import LinearRegression
from dic_connector.node.analyses.summary import Summary
from dic_connector.node.analyses.survival import Survival
from dic_connector.node.analyses.survival_ci import SurvivalIntervals
from dic_connector.node.analyses.ttest import TTest

#: Every analysis class, one entry per (name, version).
ANALYSES: tuple[type[Analysis], ...] = (Count, CountTrue, Mean, Frequency, Median, Summary,
                                        Quantiles, Survival, SurvivalIntervals, Logrank,
                                        Contingency, Fisher, ChiSquare, TTest,
                                        Correlation, LinearRegression,
                                        LogisticRegression, CoxRegression, Histogram,
                                        Prevalence)


def catalog() -> dict[str, Analysis]:
    """Name -> a fresh instance of the newest version of each analysis."""
    out: dict[str, Analysis] = {}
    for cls in ANALYSES:
        current = out.get(cls.name)
        if current is None or int(cls.version) > int(current.version):
            out[cls.name] = cls()
    return out


def get_analysis(name: str, version: str = "1") -> Analysis:
    """The analysis ``name`` at ``version``; :class:`AnalysisError` if there is none."""
    for cls in ANALYSES:
        if cls.name == name and cls.version == version:
            return cls()
    known = sorted({f"{cls.name} v{cls.version}" for cls in ANALYSES})
    raise AnalysisError(f"unknown analysis '{name}' version '{version}'; the catalogue has "
                        f"{', '.join(known)}")
