"""pgolf.model"""
