"""``sdcorr demo``: an interactive correspondence page (Gradio) and its model-side session.

:mod:`sdcorr.demo.session` needs no Gradio (its pictures come from :mod:`sdcorr.viz`);
:mod:`sdcorr.demo.app` builds the page and needs the ``sdcorr[demo]`` extra.
"""
