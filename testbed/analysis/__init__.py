"""Analysis: captures and measurement files -> packet tables -> stream metrics -> KPIs.

Each stage is a pure function of the previous one's output, so a run can be re-analysed
from its stored captures without touching the lab.
"""
