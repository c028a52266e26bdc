/*
 * camseg: Export annotations for training (qupath-camseg)
 *
 * Writes the annotations of every image in this project to
 *     <project>/camseg/annotations/<entryID>.geojson
 * with QuPath's own GeoJSON export; `qcamseg train PROJECT` learns from these files.
 * Objects made by camseg (predictions) are left out: the model learns only from you.
 * The image open now is exported as shown, including changes not saved yet.
 * Nothing already in those files is lost: annotations put there by `qcamseg import-annotations`
 * or `qcamseg synth` are kept (merged by object ID), and a file is backed up to
 * <project>/camseg/backups/ before it is replaced.
 * Run it once (not with "Run for project"); it covers all images itself.
 */

def camseg = evaluate(camsegLib()).newInstance(Dialogs, this)
String title = 'camseg: Export annotations'

camseg.guard(title) {
    def result = camseg.exportTrainingAnnotations()
    String message = 'Exported ' + result.annotations + ' annotation(s) from ' + result.images + ' image(s) to\n' + result.folder
    if (result.notes)
        message += '\n\n' + result.notes.join('\n')
    if (result.skipped)
        message += '\n\nCould not read: ' + result.skipped.join(', ')
    println message
    Dialogs.showInfoNotification(title, message)
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
