"""fastinit"""
