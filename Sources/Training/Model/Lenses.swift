import Engine
import Synchronization

/// The key paths of the model's parameter fields, made once per scalar type.
///
/// A key-path literal in generic code (`\Layer<S>.weights`) is instantiated by the runtime
/// every time it is evaluated, which costs microseconds: as much as a small layer's products.
/// These accessors build each key path once and then return the same instance.
enum Lenses {
    private static let cache = Mutex<[ObjectIdentifier: [String: AnyKeyPath]]>([:])

    private static func cached<Root, Value>(_ name: String, _ make: () -> WritableKeyPath<Root, Value>)
        -> WritableKeyPath<Root, Value>
    {
        cache.withLock { cache in
            if let found = cache[ObjectIdentifier(Root.self)]?[name] as? WritableKeyPath<Root, Value> { return found }
            let made = make()
            cache[ObjectIdentifier(Root.self), default: [:]][name] = made
            return made
        }
    }

    static func weights<S>() -> WritableKeyPath<Layer<S>, Matrix<S>> { cached("weights") { \.weights } }
    static func biases<S>() -> WritableKeyPath<Layer<S>, Vector<S>> { cached("biases") { \.biases } }
    static func layers<S>() -> WritableKeyPath<Network<S>, [Layer<S>]> { cached("layers") { \.layers } }
}
