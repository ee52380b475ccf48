"""Campaigns: a plan file of runs, a runner that starts, resumes or skips each, and a status table.

    recsys-campaign status configs/campaigns/ml1m.yaml     # where every run stands, what is left
    recsys-campaign run configs/campaigns/ml1m.yaml --parallel 2 --threads 1
"""
from recsys.campaign.plan import Job, Plan, PlanError, load_plan
from recsys.campaign.runner import Options, run_campaign, selected
from recsys.campaign.status import JobState, inspect, render

__all__ = ["Job", "JobState", "Options", "Plan", "PlanError", "inspect", "load_plan", "render", "run_campaign",
           "selected"]
