"""moelab: how sparse can a language model be before it forgets facts?"""

__version__ = "0.1.0"
