/*
 * camseg: Review next (qupath-camseg)
 *
 * Steps through the camseg Review boxes of the image open now, most useful first: selects the next
 * one and centres the viewer on it. Each prediction adds up to 20 of them where the model is least
 * sure; that is where your correction teaches it most. In a box: outline the tumour (class Tumor),
 * or run "camseg Mark as normal" on the box if it holds none. Run this script again for the next
 * box (after the last one it starts over).
 */

def camseg = evaluate(camsegLib()).newInstance(Dialogs, this)
String title = 'camseg: Review next'

camseg.guard(title) {
    def result = camseg.reviewNext(getCurrentViewer())
    println 'Showing review box ' + (int) result.rank + ' of ' + result.total
}

/** The shared helper camseg_lib.groovy: next to this script, else in the Shared or Project scripts folder. */
File camsegLib() {
    List<File> folders = []
    def self = binding.hasVariable('qupath.script.file') ? binding.getVariable('qupath.script.file') : null
    if (self != null)
        folders << new File(self.toString()).parentFile
    try {
        String shared = qupath.lib.gui.prefs.PathPrefs.scriptsPathProperty().get()
        if (shared)
            folders << new File(shared)
    } catch (Exception ignored) {
        // No Shared scripts folder set.
    }
    def project = getProject()
    if (project != null)
        folders << new File(Projects.getBaseDirectory(project), 'scripts')
    File lib = folders.collect { new File(it, 'camseg_lib.groovy') }.find { it.isFile() }
    if (lib == null)
        throw new FileNotFoundException('camseg_lib.groovy not found (looked in ' + folders.join(', ') +
                '). Install all camseg scripts together with: qcamseg install-scripts')
    return lib
}
