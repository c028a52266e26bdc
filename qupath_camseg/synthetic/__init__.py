"""(stage)"""
